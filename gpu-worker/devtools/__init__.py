"""Development tools: synthetic scenes with exact masks, segmenter-like masks made from them, and
image-quality measures.

Used by the tests, the benchmarks and the report scripts; the worker itself never imports them
(the Docker image leaves this folder out).
"""
