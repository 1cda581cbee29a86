"""Kubernetes objects: schema, defaults, validation rules, typed views, the Cluster document (pure)."""
