"""Deployment helpers: render the Kustomize overlays and Helm charts, promote model/image pins."""
