"""kube-proxy: per node, Services and their endpoints rendered as kernel rules."""
