"""revmux: reversible data multiplexing (RevMUX) for frozen transformer classifiers.

N requests are mixed into one composite hidden state by small reversible adapters, the frozen
model's expensive layers run once per group, and the same adapters run in reverse to separate
the N results.
"""

__version__ = "0.1.0"
