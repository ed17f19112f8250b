"""``python -m tsretrain.cluster submit|watch|logs``: the light, standard-library-only entry point."""

from tsretrain.cluster.commands import main

raise SystemExit(main())
