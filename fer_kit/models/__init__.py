"""Every paper's model, created by name: `create_model("dan", num_classes=8)`."""
from .registry import config_fields, create_model, list_models, logits_only, model_entry, register_model
from . import baseline, dan, ddamfn, multitask, regnet_transformer, scan_cci  # noqa: F401  (register the models)
from .dan import DAN, DANOutput
from .ddamfn import DDAMFN, DDAMFNOutput
from .multitask import DANLandmarks, DANLandmarksOutput
from .regnet_transformer import RegNetTransformer, RegNetTransformerOutput
from .scan_cci import SCANCCI, SCANCCIOutput

__all__ = ["config_fields", "create_model", "list_models", "logits_only", "model_entry", "register_model", "DAN", "DANOutput", "DDAMFN",
           "DDAMFNOutput", "DANLandmarks", "DANLandmarksOutput", "RegNetTransformer", "RegNetTransformerOutput",
           "SCANCCI", "SCANCCIOutput"]
