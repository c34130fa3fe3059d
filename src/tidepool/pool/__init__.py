"""Node-pool adapters: who the members of a pool are, and which host this is.

Membership providers (``static``, ``etcd``, ``kubernetes``) each keep a last-known-good member
list on disk; the worker picks one by name. ``hostid`` decides "same host" for the client's
direct-from-disk fast path; ``kubeapi`` is the small Kubernetes API client the ``kubernetes``
provider and the operator share.
"""
