"""The origin ("under storage"): the one funnel every call to the cloud goes through.

* :mod:`.funnel`: :class:`~.funnel.Origin`, one mount's origin; every call passes its ``_call``;
* :mod:`.settings`: how hard the funnel tries (:class:`~.settings.OriginSettings`);
* :mod:`.retry`: which errors are retried, and the backoff between tries (pure);
* :mod:`.health`: the circuit breaker, congestion versus outage, the probe while it is down;
* :mod:`.backend`: the mount's fsspec filesystem, and its answers in Tidepool's terms;
* :mod:`.localfs`: ``file://`` mounts confined to their root;
* :mod:`.diagnose`: a backend's exception named by its cause; :mod:`.probe`: the start-up check.
"""
