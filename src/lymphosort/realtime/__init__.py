"""lymphosort.realtime: the CPU sorting path (sources -> detect -> track -> crop -> classify
-> gate -> trigger events), measured against ground truth and the clock. See docs/realtime.md."""

from lymphosort.realtime.backends import BACKENDS, Backend, BackendError, load_backend, register_backend
from lymphosort.realtime.crop import CROP_SIZE, Preprocessor, crop_cells
from lymphosort.realtime.detect import Detection, Detector, DetectorConfig, detect_still
from lymphosort.realtime.gate import (CallbackSink, Gate, JsonlSink, ListSink, TriggerEvent, TriggerSink,
                                      calibrate_threshold, purity_yield_curve, threshold_for_purity)
from lymphosort.realtime.runner import FrameQueue, RealtimeRunner, RunConfig, task_label_map
from lymphosort.realtime.sources import (FolderSource, Frame, FrameSource, SimConfig, SimSource, SourceError,
                                         VideoSource, load_grey, open_source)
from lymphosort.realtime.track import Tracker, TrackerConfig

__all__ = ["BACKENDS", "Backend", "BackendError", "CROP_SIZE", "CallbackSink", "Detection", "Detector",
           "DetectorConfig", "FolderSource", "Frame", "FrameQueue", "FrameSource", "Gate", "JsonlSink", "ListSink",
           "Preprocessor", "RealtimeRunner", "RunConfig", "SimConfig", "SimSource", "SourceError", "Tracker",
           "TrackerConfig", "TriggerEvent", "TriggerSink", "VideoSource", "calibrate_threshold", "crop_cells",
           "detect_still", "load_backend", "load_grey", "open_source", "purity_yield_curve", "register_backend",
           "task_label_map", "threshold_for_purity"]
