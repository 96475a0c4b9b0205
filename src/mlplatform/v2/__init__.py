"""The Open Inference Protocol (V2): wire documents (:mod:`.types`), the input schema (:mod:`.schema`)
and the codec from request bodies to model input frames (:mod:`.codec`). A leaf package: it imports
only ``mlplatform.core.errors``; serving and explainability both build on it."""
