package main

import (
	"fmt"
	"runtime"

	libseccomp "github.com/seccomp/libseccomp-golang"
	"github.com/urfave/cli/v2"

	"kfv/supervisor"
)

var versionCommand = &cli.Command{
	Name:  "version",
	Usage: "print kfv-run's version, the libseccomp it runs with and the Landlock wall this kernel allows",
	Action: func(c *cli.Context) error {
		maj, min, mic := libseccomp.GetLibraryVersion()
		api, err := libseccomp.GetAPI()
		apis := fmt.Sprint(api)
		if err != nil {
			apis = "unknown (" + err.Error() + ")"
		}
		fmt.Fprintf(c.App.Writer, "kfv-run %s\ngo %s\nlibseccomp %d.%d.%d (API level %s)\n%s\n", version, runtime.Version(), maj, min, mic, apis, supervisor.LandlockSummary())
		return nil
	},
}
