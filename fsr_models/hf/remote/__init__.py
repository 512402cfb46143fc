"""The code a Hub repository of the zoo carries for `trust_remote_code=True`: `configuration_fsr.py`,
`modeling_fsr.py` and `image_processing_fsr.py`, self-contained (torch and transformers only), copied beside the
weights by `hub/publish.py`."""
