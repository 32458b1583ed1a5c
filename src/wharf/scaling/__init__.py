"""Scaling: scheduled windows that set an application's replica bounds, and manual scaling.

The autoscaler itself (a HorizontalPodAutoscaler on CPU and memory) is part of the
application's spec and rendered by delivery (`wharf.apps`); this capability, above apps, keeps
the window that is open now in the application's status and scales by hand.
"""
