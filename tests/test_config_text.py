"""The tools' config formats its text with yapf once per content, and the
text is mmengine's own: the same after a change, after the Runner's copies,
and in the config a training run dumps."""
import copy
import os.path as osp

import mmengine.config.config as mmengine_config
import pytest
from mmengine.config import Config

from mmbcn.engine.runner_support import (FormattedOnceConfig, config_text,
                                         formatted_once, load_tool_config)

CONFIG = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'deeplabv3',
    'deeplabv3_r18b-d16_syncbcn-ws_1xb4-1k_voc-shapes-128x128_demo.py')


@pytest.fixture
def yapf_calls(monkeypatch):
    """How many times mmengine's Config called yapf (with an empty cache
    of formatted texts)."""
    monkeypatch.setattr(config_text, '_FORMATTED', {})
    calls = []
    format_code = mmengine_config.FormatCode

    def counted(*args, **kwargs):
        calls.append(1)
        return format_code(*args, **kwargs)

    monkeypatch.setattr(mmengine_config, 'FormatCode', counted)
    return calls


def test_text_is_mmengines_and_formatted_once_per_content(yapf_calls):
    plain = Config.fromfile(CONFIG)
    cfg = formatted_once(Config.fromfile(CONFIG))
    assert type(cfg) is FormattedOnceConfig
    want = plain.pretty_text
    del yapf_calls[:]
    assert [cfg.pretty_text for _ in range(3)] == [want] * 3
    copied = copy.deepcopy(cfg)  # as the Runner keeps its config
    assert type(copied) is FormattedOnceConfig
    assert copied.pretty_text == want
    assert len(yapf_calls) == 1

    # a changed config is formatted again, as mmengine formats it
    cfg.merge_from_dict({'train_cfg.max_iters': 7})
    plain.merge_from_dict({'train_cfg.max_iters': 7})
    assert cfg.pretty_text == plain.pretty_text != want
    assert 'max_iters=7' in cfg.pretty_text


def test_unformatted_text_is_left_to_mmengine(yapf_calls):
    cfg = formatted_once(Config.fromfile(CONFIG))
    object.__setattr__(cfg, '_format_python_code', False)
    assert cfg.pretty_text == Config.pretty_text.fget(cfg)
    assert not yapf_calls


def test_tools_config_formats_once_and_dumps_mmengines_text(
        tmp_path, yapf_calls):
    cfg = load_tool_config(CONFIG, 'none', {'train_cfg.max_iters': 3},
                           str(tmp_path))
    assert type(cfg) is FormattedOnceConfig
    for _ in range(4):
        text = cfg.pretty_text
    assert len(yapf_calls) == 1
    dumped = tmp_path / 'dumped.py'
    cfg.dump(str(dumped))
    assert dumped.read_text() == text
    assert Config.fromfile(str(dumped)).pretty_text == text
