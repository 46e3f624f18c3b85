from bg_platform.cli import main

raise SystemExit(main())
