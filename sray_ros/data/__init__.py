"""Scene data: label sets, ScanNet / Replica readers, source-view selection, training ray batches.

The synthetic room generator lives in :mod:`sray_ros.data.synth` (optional dependencies; not imported here).
"""

from sray_ros.data.label_sets import LabelSet, colorize, load_label_set
from sray_ros.data.ray_batch import RayBatch, RayBatchSampler, build_ray_batch
from sray_ros.data.replica import load_replica_scene
from sray_ros.data.scannet import list_scannet_scenes, load_scannet_scene
from sray_ros.data.scene import Scene, SceneArrays, SceneFormatError
from sray_ros.data.view_selection import sample_source_views, select_source_views, view_scores

__all__ = [
    "LabelSet", "colorize", "load_label_set", "RayBatch", "RayBatchSampler", "build_ray_batch",
    "load_replica_scene", "list_scannet_scenes", "load_scannet_scene", "Scene", "SceneArrays", "SceneFormatError",
    "sample_source_views", "select_source_views", "view_scores",
]
