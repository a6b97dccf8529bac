# Copyright (c) mmbcn contributors. All rights reserved.
"""The parts of ``tools/demo.py`` (BCN+WS against GN+WS, and SyncBN for
segmentation, trained side by side on the bundled data):

* ``tasks``: the runs of each task (names, configs), metrics and curves;
* ``run_config``: each run's config (iterations, schedule, seed, image
  size) and the settings that rows of one table share;
* ``supervise``: worker processes, one per run, with a progress line;
* ``worker``: what a worker does: train one config, collect its metrics
  and predictions;
* ``results``: the table (results.md / results.json), runs added to a
  finished demo, and the summary over seeds;
* ``plots``: the training curves and the predictions side by side;
* ``pretrain``: backbones pretrained on the bundled classification set,
  cached, for ``--pretrained``;
* ``demo``: the whole demo, from the parsed command line.

Importing this package imports no more than ``import mmbcn`` does (no
mmdet, no mmseg): each part imports them where it uses them.
"""
