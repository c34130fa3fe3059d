"""A dashboard served by every worker at ``/``: what the cache holds and does, for a person.

An edge site's operator, often with the cloud link down, opens the worker's address in a browser
and sees its datasets (cached against total, hit ratios, WAN bytes saved), the origin's state, the
tiers against their quotas and watermarks, the pool's members, load jobs and the last minutes of
throughput. The page (``index.html``, ``app.js``, ``style.css`` beside this file, shipped as
package data) polls the worker's JSON routes; nothing is fetched from anywhere else.

:mod:`.routes` adds the page and its views to the worker's API; :mod:`.session` is the login
cookie that lets a browser read those views off loopback without the token in a URL.
"""

from __future__ import annotations

from tidepool.worker.dashboard.routes import DashboardRoutes

__all__ = ["DashboardRoutes"]
