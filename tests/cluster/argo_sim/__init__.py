"""A test-only interpreter of the rendered Argo WorkflowTemplate (never a way to run production work).

``render`` renders the chart with a real Helm exactly as ``deploy/kind/up.sh`` installs it; ``engine`` runs the
WorkflowTemplate with Argo v4's semantics (read from argo-workflows v4.0.10: ``workflow/controller/dag.go``,
``operator.go: processNodeRetries``, ``steps.go: shouldExecute``, ``common/ancestry.go``) and fails loudly on
any field it does not implement; ``pods`` holds a pod's plan, process and verdict; ``containers`` runs each pod
inside the image its template names (built by ``images``), ``local`` as a local process in a fresh pod folder.
"""
