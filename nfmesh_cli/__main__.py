"""``python -m nfmesh_cli ...``: the ``nfmesh`` command without the installed script."""

import sys

from nfmesh_cli.main import main

sys.exit(main())
