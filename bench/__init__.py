"""On-device benchmark runner behind ``apps/benchmark.py``.

Measures every model x available backend x precision (file size, load time,
first inference, latency median/p90/p99 after warm-up, throughput, peak RSS),
the face pipeline split into detect / align / embed on real photos, and
optional third-party peers in the same run; reports as a table, JSON,
Markdown and a PNG plot.  Uses only the SDK runtime (numpy, OpenCV, one
inference backend), so it runs the same on a CPU laptop and on a Jetson.
"""
