from nsk.store.sqlite import Store, cluster_dir, RUN_ROOT  # noqa: F401
