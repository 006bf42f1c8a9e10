from stable_audio_3.apps.entry import main

raise SystemExit(main())
