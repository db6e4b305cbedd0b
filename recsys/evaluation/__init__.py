"""Offline evaluation: ranking metrics, the MIND impression protocol and bootstrap intervals.

The metric modules (``metrics``, ``impressions``, ``bootstrap``) are pure numpy/scipy functions
over per-user arrays; import them from their modules, this package imports nothing eagerly.
"""
