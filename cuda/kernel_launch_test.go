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

// packageSources parses the package's Go files, tests left out.
func packageSources(t *testing.T) (*token.FileSet, []*ast.File) {
	t.Helper()
	paths, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, file)
	}
	return fset, files
}

// ptxParams returns each kernel's parameter types in kernels/*.ptx, and
// checks that ptxEntries, which the backend loads them by, lists the
// same kernels.
func ptxParams(t *testing.T) map[string][]string {
	t.Helper()
	params := map[string][]string{}
	paths, err := filepath.Glob("kernels/*.ptx")
	if err != nil {
		t.Fatal(err)
	}
	entries := 0
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
		for _, name := range ptxEntries(string(data)) {
			if _, ok := params[name]; !ok {
				t.Errorf("%s: ptxEntries lists %s, which is not a kernel there", p, name)
			}
			entries++
		}
	}
	if entries != len(params) {
		t.Errorf("ptxEntries lists %d kernels, the PTX has %d", entries, len(params))
	}
	return params
}

// stringLiteral is the value of a string literal expression.
func stringLiteral(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

var kernelName = regexp.MustCompile(`^[a-z][a-z0-9_]*_(f32|bf16|f16)$`)

// kernelNames are the kernels an expression names: a literal that names
// one (ending in _f32, _bf16 or _f16), or a literal prefix a storage suffix is
// added to ("relu_fwd_"+suffix), with each suffix.
func kernelNames(e ast.Expr) []string {
	if s, ok := stringLiteral(e); ok && kernelName.MatchString(s) {
		return []string{s}
	}
	if b, ok := e.(*ast.BinaryExpr); ok && b.Op == token.ADD {
		if prefix, ok := stringLiteral(b.X); ok && strings.HasSuffix(prefix, "_") && kernelName.MatchString(prefix+"f32") {
			return []string{prefix + "f32", prefix + "bf16", prefix + "f16"}
		}
	}
	return nil
}

// packedPassNames are the kernels a call packedPass("prefix_", …) or
// packedKernel("prefix_", …) may name: prefix_ and prefix_vec_ with each
// storage suffix.
func packedPassNames(e ast.Expr) []string {
	call, ok := e.(*ast.CallExpr)
	if !ok || len(call.Args) == 0 {
		return nil
	}
	if fn, ok := call.Fun.(*ast.Ident); !ok || fn.Name != "packedPass" && fn.Name != "packedKernel" {
		return nil
	}
	prefix, ok := stringLiteral(call.Args[0])
	if !ok {
		return nil
	}
	var names []string
	for _, p := range []string{prefix, prefix + "vec_"} {
		names = append(names, kernelNames(&ast.BinaryExpr{X: &ast.BasicLit{Kind: token.STRING, Value: strconv.Quote(p)}, Op: token.ADD, Y: ast.NewIdent("suffix")})...)
	}
	return names
}

// Every kernel name in the source (wherever it is, a launch's argument
// or a variable's value) is in the PTX.
func TestLaunchedKernelsExist(t *testing.T) {
	params := ptxParams(t)
	fset, files := packageSources(t)
	found := 0
	for _, file := range files {
		ast.Inspect(file, func(n ast.Node) bool {
			e, ok := n.(ast.Expr)
			if !ok {
				return true
			}
			names := append(kernelNames(e), packedPassNames(e)...)
			for _, name := range names {
				found++
				if _, ok := params[name]; !ok {
					t.Errorf("%s: kernel %s is not in kernels/*.ptx", fset.Position(e.Pos()), name)
				}
			}
			return len(names) == 0
		})
	}
	// The backend names about ninety kernels; far fewer means the scan no
	// longer sees them.
	if found < 60 {
		t.Fatalf("found %d kernel names in the source", found)
	}
}

// launchConfigArgs is how many arguments each launch helper takes between
// the kernel's name and the kernel's own arguments.
var launchConfigArgs = map[string]int{"launch": 3, "launchN": 1, "launch2": 3, "launchGrid": 4, "launchDims": 3, "launchNHWCPartial": 3, "launchPacked": 2}

// argKinds are the PTX parameter types the argument helpers write.
var argKinds = map[string]string{"ptrArg": ".u64", "intArg": ".u32", "floatArg": ".f32", "divMul": ".u32", "divShift": ".u32"}

// namesHeld maps each variable of fn that is given a kernel name
// (name := "…_f32", name = "…_nhwc_" + suffix, name, threads :=
// packedPass("…_", …), name, w := packedKernel("…_", …)) to every name it
// is given.
func namesHeld(fn *ast.FuncDecl) map[string][]string {
	held := map[string][]string{}
	ast.Inspect(fn, func(n ast.Node) bool {
		if as, ok := n.(*ast.AssignStmt); ok && len(as.Lhs) == 2 && len(as.Rhs) == 1 {
			if id, ok := as.Lhs[0].(*ast.Ident); ok {
				held[id.Name] = append(held[id.Name], packedPassNames(as.Rhs[0])...)
			}
		}
		if as, ok := n.(*ast.AssignStmt); ok && len(as.Lhs) == len(as.Rhs) {
			for i, lhs := range as.Lhs {
				if id, ok := lhs.(*ast.Ident); ok {
					held[id.Name] = append(held[id.Name], kernelNames(as.Rhs[i])...)
				}
			}
		}
		return true
	})
	return held
}

func TestLaunchArgumentsMatchKernels(t *testing.T) {
	params := ptxParams(t)
	fset, files := packageSources(t)
	checked := 0
	for _, file := range files {
		for _, decl := range file.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok {
				continue
			}
			checked += checkLaunches(t, fset, fn, params)
		}
	}
	if checked < 40 {
		t.Fatalf("checked %d launches; the scan no longer sees them", checked)
	}
	t.Logf("%d launches checked", checked)
}

// checkLaunches checks the launches in fn against the kernels' parameters
// and returns how many it checked.
func checkLaunches(t *testing.T, fset *token.FileSet, fn *ast.FuncDecl, params map[string][]string) (checked int) {
	t.Helper()
	held := namesHeld(fn)
	ast.Inspect(fn, func(n ast.Node) bool {
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
		args := call.Args[1+min(config, len(call.Args)-1):]
		kernels := kernelNames(call.Args[0])
		if id, ok := call.Args[0].(*ast.Ident); ok {
			kernels = held[id.Name]
		}
		if len(kernels) == 0 {
			// The launch helpers pass a name on with args..., skipped
			// above; any other launch must name its kernels so.
			t.Errorf("%s: %s launches a kernel whose name the test cannot follow", fset.Position(call.Pos()), sel.Sel.Name)
		}
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
	return checked
}
