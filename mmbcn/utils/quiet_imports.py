# Copyright (c) mmbcn contributors. All rights reserved.
"""Silences the one warning that a third-party import prints on every tool
run; importing this module installs the filter (standard library only).

mmengine 0.10 resolves the ``mmdet::``/``mmseg::`` ``_base_`` paths of our
configs with ``mmengine.utils.is_installed`` and ``get_installed_path``,
which import ``pkg_resources`` and then reload it. setuptools 80 (the
newest with ``pkg_resources``, which mmengine needs, hence the pin in
setup.py) warns at each of the two: ``UserWarning: pkg_resources is
deprecated as an API...``, once attributed to
``mmengine.utils.package_utils`` and once to ``importlib`` (the reload).
The deprecated call is inside mmengine, which we cannot change, and the
warning asks nothing of our users; so it is filtered by its exact
message (the module it is attributed to is not stable), every other
warning left as it is.
"""
import warnings

PKG_RESOURCES_DEPRECATION = r'pkg_resources is deprecated as an API\.'

warnings.filterwarnings(
    'ignore', message=PKG_RESOURCES_DEPRECATION, category=UserWarning)
