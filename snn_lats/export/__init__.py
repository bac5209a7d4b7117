"""Export to NIR (Neuromorphic Intermediate Representation) and the deployment figures of the exported graph.

``to_nir`` and ``deployment_report`` need the ``[nir]`` extra (``nir``, ``nirtorch``); see docs/deploy.md.
"""
from .deployment import DeploymentReport, LayerFigures, Limits, deployment_report
from .graph import NIR_EXTRA, to_nir, write_nir
from .step_graph import NIRExportError, StepGraph, build_step_graph

__all__ = ["NIR_EXTRA", "DeploymentReport", "LayerFigures", "Limits", "NIRExportError", "StepGraph",
           "build_step_graph", "deployment_report", "to_nir", "write_nir"]
