// Runs in both builds: the kernels the backend launches exist in the
// committed PTX. A misspelt name would otherwise first fail on a GPU, at
// the launch ("kernel … is not in the embedded PTX").

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
