// opscheck validates the deployment files that have no checker on a machine without Docker or
// Prometheus: `opscheck compose FILE...` loads a Compose file with compose-go (the loader
// `docker compose config` uses: schema, interpolation, references between services; FILE may
// be `base.yml:override.yml`, merged as `docker compose -f base.yml -f override.yml` would), and
// `opscheck rules FILE...` parses Prometheus rule groups exactly as Prometheus loads them
// (rulefmt: YAML structure, PromQL expressions, label and annotation templates), and
// `opscheck yaml2json FILE` prints a multi-document YAML file as a JSON array (CRDs, for
// scripts/k8s-schemas.py, which then needs no YAML library).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: opscheck compose|rules FILE...")
		os.Exit(2)
	}
	failed := false
	for _, file := range os.Args[2:] {
		var err error
		switch os.Args[1] {
		case "compose":
			err = checkCompose(file)
		case "rules":
			err = checkRules(file)
		case "yaml2json":
			err = yamlToJSON(file)
		default:
			fmt.Fprintf(os.Stderr, "unknown check %q\n", os.Args[1])
			os.Exit(2)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func checkCompose(file string) error {
	// Several files as Compose's COMPOSE_FILE names them; paths relative to the first one's.
	var files []string
	for _, f := range strings.Split(file, ":") {
		abs, err := filepath.Abs(f)
		if err != nil {
			return err
		}
		files = append(files, abs)
	}
	opts, err := cli.NewProjectOptions(files,
		cli.WithWorkingDirectory(filepath.Dir(files[0])),
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithName("graphbridge"),
		// Services behind profiles are validated too.
		cli.WithProfiles([]string{"*"}),
	)
	if err != nil {
		return err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return err
	}
	fmt.Printf("%s: compose ok (%d services", file, len(project.Services)+len(project.DisabledServices))
	fmt.Printf(", %d volumes)\n", len(project.Volumes))
	return nil
}

func checkRules(file string) error {
	groups, errs := rulefmt.ParseFile(file, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.Default())
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(os.Stderr, "%s: %v\n", file, e)
		}
		return fmt.Errorf("%d problem(s)", len(errs))
	}
	n := 0
	for _, g := range groups.Groups {
		n += len(g.Rules)
	}
	fmt.Printf("%s: rules ok (%d groups, %d rules)\n", file, len(groups.Groups), n)
	return nil
}

func yamlToJSON(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []any
	for {
		var doc any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
		docs = append(docs, doc)
	}
	return json.NewEncoder(os.Stdout).Encode(docs)
}
