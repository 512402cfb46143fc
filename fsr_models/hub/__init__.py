"""The Hub and file side: the zoo's folder layout (`folders`, `weight_files`), its records and cards (`records`,
`naming`, `measured_text`, `training_text`, `card`) and its Hub repositories (`repository`)."""
