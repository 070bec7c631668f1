"""The shortcut audit: is a classifier reading the lungs, or recognising where the image came from?

When every COVID image comes from one collection and most other images from another, a model
can score well by recognising the collection (DeGrave et al. 2021; Maguolo & Nanni 2021). Four
measurements, each compared with what chance or the source alone would give:

- a **source probe**: the same backbone and head trained to predict the source, scored within
  each class (so it cannot use the class as a proxy for the source; chance is 1/sources);
- the classifier retrained and tested with the **lungs hidden** (the central square blanked);
- **Grad-CAM** saliency on a fixed sample of test images: the share of its mass in the lung box;
- an **external** test source never trained on.

The audit by job: :mod:`measures` (the four measurements and their statistics), :mod:`gradcam`
(saliency maps), :mod:`findings` (which tests point at a shortcut, the verdict and audit.md).
"""
