from suffixspec.cli import main

raise SystemExit(main())
