"""The origin ("under storage"): the one funnel every call to the cloud goes through."""
