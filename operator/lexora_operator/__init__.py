"""Lexora model operator: reconciles ModelDeployment resources into Triton Inference Server."""
