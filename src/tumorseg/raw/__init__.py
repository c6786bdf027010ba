"""Raw scans in: a scanner's series (DICOM or NIfTI on their own grids, skull on) brought into the
space the models were trained in, as the BraTS pipeline does it, and the result taken back.

``images`` converts between SimpleITK images and NIfTI arrays; ``dicom`` finds and names the series
of a study; ``brain`` strips the skull; ``registration`` aligns sequences to each other and to the
SRI24 atlas; ``pipeline`` runs the steps in order and maps labels back to the patient's grid.
"""
