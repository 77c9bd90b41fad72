"""ComfyUI node pack of Tri-Ergon: thin wrappers over `triergon_core` (classic node API).

Importing this package imports no ComfyUI module: they are imported when a node runs (see `host`).
"""

from .nodes_generate import TriErgonDecode, TriErgonEncodeConditions, TriErgonMuxVideo, TriErgonSample
from .nodes_inputs import TriErgonLoadVideo, TriErgonModelLoader
from .nodes_lufs import TriErgonEditLUFSCurve, TriErgonMeasureLUFS, TriErgonPlotLUFS, TriErgonPredictLUFS

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "TriErgonModelLoader": "Load Tri-Ergon Model",
    "TriErgonLoadVideo": "Load Video (Tri-Ergon)",
    "TriErgonEncodeConditions": "Encode Conditions (Tri-Ergon)",
    "TriErgonPredictLUFS": "Predict LUFS Curve",
    "TriErgonMeasureLUFS": "Measure LUFS Curve",
    "TriErgonEditLUFSCurve": "Edit LUFS Curve",
    "TriErgonPlotLUFS": "Plot LUFS Curve",
    "TriErgonSample": "Sample (Tri-Ergon)",
    "TriErgonDecode": "Decode Audio (Tri-Ergon)",
    "TriErgonMuxVideo": "Mux Audio into Video",
}
_CLASSES = (TriErgonModelLoader, TriErgonLoadVideo, TriErgonEncodeConditions, TriErgonPredictLUFS,
            TriErgonMeasureLUFS, TriErgonEditLUFSCurve, TriErgonPlotLUFS, TriErgonSample, TriErgonDecode,
            TriErgonMuxVideo)
NODE_CLASS_MAPPINGS: dict[str, type] = {cls.__name__: cls for cls in _CLASSES}
assert set(NODE_CLASS_MAPPINGS) == set(NODE_DISPLAY_NAME_MAPPINGS), "every node needs a display name"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
