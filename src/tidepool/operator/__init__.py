"""Kubernetes and OpenYurt surface: CRDs, manifest rendering, the kopf operator and its helpers.

Layers inside this package, lowest first (lower modules never import higher ones):

* pure: :mod:`.schema` (pydantic JSON schema -> structural schema), :mod:`.crds`, :mod:`.convert`,
  :mod:`.names`, :mod:`.render`, :mod:`.dataload`, :mod:`.status`;
* I/O adapters: :mod:`.kube` (a small asyncio client of the Kubernetes API),
  :mod:`.membership_k8s` (pool members from EndpointSlices), :mod:`.reporter` (workers write
  their cache statistics to Leases: edge to cloud), :mod:`.reconcile`;
* surfaces: :mod:`.handlers` (kopf), :mod:`.cli`.

The operator imports :mod:`kopf`, which is an optional dependency (extra ``k8s``); the pure
modules need only the core install, so ``tidepool render`` and ``tidepool convert`` work without it.
"""
