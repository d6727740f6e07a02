"""Embeddings and image generation (OpenAI-compatible routes): their schemas, credit holds, router
jobs and response bodies."""
