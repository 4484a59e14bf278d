"""samplegraph: a workflow graph engine for inference-time sampling.

    from samplegraph import Runtime, Workflow
    result = Runtime().run(Workflow.load("workflows/quickstart.json"), out_dir="out")
"""
from samplegraph.graph.errors import NodeRunError, RunCancelled, SamplegraphError, WorkflowError
from samplegraph.graph.workflow import Workflow
from samplegraph.nodes.api import Node, Registry, node
from samplegraph.runtime.api import CancelToken, RunResult, Runtime

__version__ = "0.1.0"
__all__ = ["Runtime", "Workflow", "RunResult", "CancelToken", "Registry", "Node", "node",
           "SamplegraphError", "WorkflowError", "NodeRunError", "RunCancelled", "__version__"]
