"""Node-pool adapters: who the members of a pool are, and which host this is.

``membership`` holds the provider interface and the one map that picks a provider by name
(``static``, ``etcd``, ``kubernetes``: one module each); every provider keeps a last-known-good
member list on disk. ``entries`` signs etcd's member entries; ``kubeapi`` is the small Kubernetes
API client the ``kubernetes`` provider and the operator share; ``hostid`` decides "same host" for
the client's direct-from-disk fast path; ``tls`` builds the SSL contexts of peers and clients.
"""
