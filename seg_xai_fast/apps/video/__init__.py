"""Explained video: stages.py (threads joined by bounded queues), frames.py (the class each frame
shows, its map, the model and explain stages, overlay_stream for any frame source), io.py (PyAV
files, streams and devices), pipeline.py (decode → explain → overlay → encode) and clip.py (the
demo clip)."""
from .clip import write_demo_video
from .frames import FrameExplainer, overlay_stream
from .pipeline import VideoSummary, explain_video, run_video

__all__ = ["FrameExplainer", "VideoSummary", "explain_video", "overlay_stream", "run_video", "write_demo_video"]
