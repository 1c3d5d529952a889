from segtrain.cli import main

raise SystemExit(main())
