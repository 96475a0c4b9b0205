"""The Feast feature repository of the demo models (definitions and the feature_store.yaml template).

Constants here are importable without importing Feast.
"""

FEATURE_SERVICE = "fraud_detection_v1"
#: Version of the feature service definition (recorded on models as a tag).
FEATURE_SERVICE_VERSION = "1"
