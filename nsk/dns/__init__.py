"""Cluster DNS: records from the cluster's objects (pure) and the server that answers them."""
