// Runs in both builds: the kernels the backend launches exist in the
// committed PTX, and each launch passes as many arguments, of the kinds,
// as the kernel takes. A misspelt name would otherwise first fail on a
// GPU, at the launch ("kernel … is not in the embedded PTX"), and a
// missing or misplaced argument would compute garbage there.

package cuda

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// launchedKernels lists the kernel names in the package's Go source: every
// string literal that names a kernel (ending in _f32 or _bf16), and every
// literal prefix a storage suffix is added to ("relu_fwd_"+suffix), with
// each suffix.
func launchedKernels(t *testing.T) map[string]string {
	t.Helper()
	kernelName := regexp.MustCompile(`^[a-z][a-z0-9_]*_(f32|bf16)$`)
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{} // name → where
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		literal := func(e ast.Expr) (string, bool) {
			lit, ok := e.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return "", false
			}
			s, err := strconv.Unquote(lit.Value)
			return s, err == nil
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch e := n.(type) {
			case *ast.BinaryExpr:
				if prefix, ok := literal(e.X); ok && e.Op == token.ADD && strings.HasSuffix(prefix, "_") && kernelName.MatchString(prefix+"f32") {
					for _, suffix := range []string{"f32", "bf16"} {
						names[prefix+suffix] = fset.Position(e.Pos()).String()
					}
					return false
				}
			case *ast.BasicLit:
				if s, ok := literal(e); ok && kernelName.MatchString(s) {
					names[s] = fset.Position(e.Pos()).String()
				}
			}
			return true
		})
	}
	return names
}

func TestLaunchedKernelsExist(t *testing.T) {
	entries := map[string]bool{}
	ptx, err := filepath.Glob("kernels/*.ptx")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ptx {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range ptxEntries(string(data)) {
			entries[name] = true
		}
	}
	names := launchedKernels(t)
	// The backend launches about fifty kernels; far fewer means the scan
	// no longer sees them.
	if len(names) < 40 || len(entries) < len(names) {
		t.Fatalf("found %d kernel names in the source and %d entries in the PTX", len(names), len(entries))
	}
	for name, where := range names {
		if !entries[name] {
			t.Errorf("%s: kernel %s is not in kernels/*.ptx", where, name)
		}
	}
}

// launchConfigArgs is how many arguments each launch helper takes between
// the kernel's name and the kernel's own arguments.
var launchConfigArgs = map[string]int{"launch": 3, "launchN": 1, "launch2": 3, "launchGrid": 4, "launchDims": 3, "launchNHWCPartial": 2}

// argKinds are the PTX parameter types the argument helpers write.
var argKinds = map[string]string{"ptrArg": ".u64", "intArg": ".u32", "floatArg": ".f32"}

// ptxParams returns each kernel's parameter types in the PTX.
func ptxParams(t *testing.T) map[string][]string {
	t.Helper()
	params := map[string][]string{}
	paths, err := filepath.Glob("kernels/*.ptx")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var kernel string
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(line, ".visible .entry "):
				kernel = strings.TrimSuffix(strings.TrimPrefix(line, ".visible .entry "), "(")
				params[kernel] = []string{}
			case kernel != "" && strings.HasPrefix(line, ".param "):
				params[kernel] = append(params[kernel], strings.Fields(line)[1])
			case line == ")":
				kernel = ""
			}
		}
	}
	return params
}

func TestLaunchArgumentsMatchKernels(t *testing.T) {
	params := ptxParams(t)
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || call.Ellipsis.IsValid() || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			config, ok := launchConfigArgs[sel.Sel.Name]
			if !ok {
				return true
			}
			var kernels []string
			switch e := call.Args[0].(type) {
			case *ast.BasicLit:
				name, _ := strconv.Unquote(e.Value)
				kernels = []string{name}
			case *ast.BinaryExpr:
				if lit, ok := e.X.(*ast.BasicLit); ok {
					prefix, _ := strconv.Unquote(lit.Value)
					kernels = []string{prefix + "f32", prefix + "bf16"}
				}
			}
			args := call.Args[1+min(config, len(call.Args)-1):]
			for _, k := range kernels {
				want, ok := params[k]
				if !ok {
					continue // TestLaunchedKernelsExist reports it
				}
				where := fset.Position(call.Pos())
				if len(args) != len(want) {
					t.Errorf("%s: %s gets %d arguments, the kernel takes %d (%v)", where, k, len(args), len(want), want)
					continue
				}
				for i, a := range args {
					helper, ok := a.(*ast.CallExpr)
					if !ok {
						continue
					}
					if id, ok := helper.Fun.(*ast.Ident); ok && argKinds[id.Name] != "" && argKinds[id.Name] != want[i] {
						t.Errorf("%s: %s argument %d is %s (%s), the kernel takes %s", where, k, i, id.Name, argKinds[id.Name], want[i])
					}
				}
				checked++
			}
			return true
		})
	}
	if checked < 40 {
		t.Fatalf("checked %d launches; the scan no longer sees them", checked)
	}
	t.Logf("%d launches checked", checked)
}
