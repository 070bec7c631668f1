"""Using a trained model on new X-rays: DICOM reading and the ``cxr-predict`` command."""
