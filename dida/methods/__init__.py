"""Adaptation methods: one file = one class; pure maths in ``common.py``."""
