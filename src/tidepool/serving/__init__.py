"""HTTP listener plumbing shared by the worker and the S3 gateway (an adapter over aiohttp)."""

from __future__ import annotations

from tidepool.serving.budget import BudgetSite, ConnectionBudget, ServerLimits, busy_response
from tidepool.serving.memory import MemoryBudget

__all__ = ["BudgetSite", "ConnectionBudget", "MemoryBudget", "ServerLimits", "busy_response"]
