"""The RoadSign edge agent: on-device sign reading, store-and-forward reporting and model updates.

Runs on the device with neither torch nor the server stack; heavy modules are imported only by the
commands that need them, so ``roadsign-agent --help`` stays fast on a small CPU.
"""
