"""Wire formats: OpenAI request validation and error bodies, SSE encoding and decoding.

Pure functions, no I/O.
"""
