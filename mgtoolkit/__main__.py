from mgtoolkit.cli import main

raise SystemExit(main())
