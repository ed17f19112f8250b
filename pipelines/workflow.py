"""The cluster run's Argo WorkflowTemplates, defined with Hera from the stage registry
(``tsretrain.cluster.workflow``).

``python pipelines/workflow.py [training|infer]`` writes one to standard output (``make workflow`` writes both into
the chart: ``helm/tsretrain/files/``).
"""

import sys

from tsretrain.cluster.workflow import main

if __name__ == "__main__":
    main(sys.argv[1:])
