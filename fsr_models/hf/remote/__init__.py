"""The code a Hub repository of the zoo carries for `trust_remote_code=True`: `configuration_fsr.py`,
`modeling_fsr.py` and `image_processing_fsr.py`, copied beside the weights by `hub/publish.py` together with the
package's `fsr_core.py` and the defenses' `cas.py`, `cifs.py` and `fd.py` (torch only), which the first two import
relatively. With them they need torch and transformers only.

`configuration_fsr` and `modeling_fsr` are therefore not importable from here: `.fsr_core` exists only beside them in
an exported folder. The package loads them from such a folder through transformers' own loader
(`fsr_models.hub.repository.remote_model_class`), as users get them; `image_processing_fsr`, which imports nothing
relatively, the package imports from here.
"""
