"""Monitoring a patient: two visits compared (``compare``), what is measured on them
(``measures``), the response they show by published rules (``response``), the follow-up brought
onto the baseline (``alignment``) and the report (``report``)."""
