"""The one metric registry, in a module of its own so that what the package imports (the bootstrap) can read
it without importing the package's __init__, which imports them."""

from __future__ import annotations

from groundtune.metrics.base import Metric
from groundtune.metrics.bleu import SacreBLEU
from groundtune.metrics.f1 import F1
from groundtune.metrics.meteor import Meteor
from groundtune.metrics.rouge import Rouge

# The report, the CLI's --metrics help and the sweep's columns all read it, in this order
# (the MultiDoc2Dial LLaMA-Adapter paper's Table 2 order, then ROUGE-1).
METRICS: dict[str, Metric] = {m.name: m for m in (F1(), Meteor(), Rouge("ROUGE-L", "rougeL"), SacreBLEU(),
                                                  Rouge("ROUGE-1", "rouge1"))}
