from tumorseg.cli import main

raise SystemExit(main())
