from stable_audio_3.apps.cli import main

raise SystemExit(main())
